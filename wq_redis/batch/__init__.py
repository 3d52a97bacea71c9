"""Worker jobs on batch systems (SLURM, HTCondor, SGE, PBS, LSF), through each system's own
command line: the layer a batch ``wq.Factory`` and ``wq-redis factory`` submit, track and
remove their worker jobs with.  It knows nothing of queues or Redis: it runs a command
line as jobs and says which of its jobs wait, run or ended.
"""

from .jobs import BatchJobs
from .systems import BATCH_TYPES, JobState, Resources, SubmitFailed, batch_system

__all__ = ["BATCH_TYPES", "BatchJobs", "JobState", "Resources", "SubmitFailed", "batch_system"]
