#!/bin/bash
#SBATCH --job-name=qe-scf
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=32
#SBATCH --cpus-per-task=2
#SBATCH --time=1-00:00:00
#SBATCH --partition=normal
#SBATCH --account=proj42
#SBATCH --output=qe-scf.%j.out
# matdx job qe-scf on x86-cluster (slurm): 4 node(s) x 32 ranks x 2 threads, elapse 24:00:00
# site set-up (trusted lines from the profile)
module purge
module load gcc/12 openmpi/4.1 quantum-espresso/7.2
export OMP_NUM_THREADS=2
export SRUN_CPUS_PER_TASK=2
export OMP_PLACES=cores
export OMP_PROC_BIND=close
export MATDX_QE_COMMAND='srun --overlap -N 1 -n 64 --cpu-bind=cores pw.x'
srun --cpu-bind=cores pw.x -nk 4 -in scf.in
