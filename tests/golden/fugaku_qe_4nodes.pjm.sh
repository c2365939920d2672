#!/bin/bash
#PJM -N qe-scf
#PJM -L "node=4"
#PJM -L "rscgrp=small"
#PJM -L "elapse=24:00:00"
#PJM --mpi "proc=16"
#PJM --mpi "max-proc-per-node=4"
#PJM -g hp120000
#PJM -x PJM_LLIO_GFSCACHE=/vol0004
#PJM --llio sharedtmp-size=10Gi
#PJM -j
#PJM -S
# matdx job qe-scf on fugaku (pjm): 4 node(s) x 4 ranks x 12 threads, elapse 24:00:00
# site set-up (trusted lines from the profile)
. /vol0004/apps/oss/spack/share/spack/setup-env.sh
spack load quantum-espresso@7.2 %fj@4.10.0 arch=linux-rhel8-a64fx
spack load python@3.11.6 %fj@4.10.0 arch=linux-rhel8-a64fx
spack load py-mpi4py@3.1.4 %fj@4.10.0 ^python@3.11.6 arch=linux-rhel8-a64fx
# distribute files every node reads to the LLIO cache
echo "$PATH" | tr ':' '\n' | grep '^/vol0004/apps/oss/spack' | xargs -r /home/system/tool/dir_transfer
echo "$LD_LIBRARY_PATH" | tr ':' '\n' | grep '^/vol0004/apps/oss/spack' | xargs -r /home/system/tool/dir_transfer
export OMP_NUM_THREADS=12
export PLE_MPI_STD_EMPTYFILE=off
mpiexec -stdout-proc ./output.%j/%m/%/1000r/stdout -stderr-proc ./output.%j/%m/%/1000r/stderr pw.x -nk 4 -in scf.in
