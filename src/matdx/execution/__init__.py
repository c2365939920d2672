"""Running campaigns on a cluster: batch jobs, the MPI task farm, offline nodes, lost runs.

:mod:`~matdx.execution.submit` packs a campaign's Fireworks into few batch jobs through a
site profile (:mod:`matdx.sites`) and a scheduler (:mod:`matdx.schedulers`);
:mod:`~matdx.execution.farm` runs them inside a job on every rank;
:mod:`~matdx.execution.offline` runs them on compute nodes without a database and brings
the results back; :mod:`~matdx.execution.lostruns` reruns what a killed job left.
Execution sits above the campaign pipeline (:mod:`matdx.workflows`) and below the CLI.
"""
