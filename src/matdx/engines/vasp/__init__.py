"""VASP through pymatgen (inputs, parsing) and custodian (running, error recovery).

:mod:`.inputs` writes INCAR/KPOINTS/POSCAR/POTCAR from pymatgen's Materials Project input
sets, :mod:`.handlers` chooses custodian's error handlers per task, :mod:`.outputs` parses a
finished run into :class:`~matdx.schemas.results.CalcResult` fields and :mod:`.core` runs it
all (:class:`~.core.VaspEngine`). VASP itself is licensed: the command comes from an
:class:`~matdx.engines.base.EngineProfile` (``MATDX_VASP_COMMAND``), POTCARs from pymatgen's
``PMG_VASP_PSP_DIR``.
"""
