//! SLURM job states, reduced to what the driver acts on.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Completed,
    /// Ended without success: the payload says which SLURM state.
    Ended(EndedHow),
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedHow {
    Failed,
    Cancelled,
    Timeout,
    OutOfMemory,
    NodeFail,
    Preempted,
    BootFail,
    Deadline,
}

impl JobState {
    pub fn parse(s: &str) -> JobState {
        match s.trim().trim_end_matches('+') {
            "PENDING" | "PD" | "REQUEUED" | "RQ" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" | "SUSPENDED" | "S" => JobState::Pending,
            "RUNNING" | "R" | "CONFIGURING" | "CF" | "COMPLETING" | "CG" | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "STOPPED" => {
                JobState::Running
            }
            "COMPLETED" | "CD" => JobState::Completed,
            "FAILED" | "F" => JobState::Ended(EndedHow::Failed),
            "CANCELLED" | "CA" => JobState::Ended(EndedHow::Cancelled),
            "TIMEOUT" | "TO" => JobState::Ended(EndedHow::Timeout),
            "OUT_OF_MEMORY" | "OOM" => JobState::Ended(EndedHow::OutOfMemory),
            "NODE_FAIL" | "NF" => JobState::Ended(EndedHow::NodeFail),
            "PREEMPTED" | "PR" => JobState::Ended(EndedHow::Preempted),
            "BOOT_FAIL" | "BF" => JobState::Ended(EndedHow::BootFail),
            "DEADLINE" | "DL" => JobState::Ended(EndedHow::Deadline),
            _ => JobState::Other,
        }
    }

    /// Still queued or running: a new submission of the same key would be a duplicate.
    pub fn is_live(self) -> bool {
        matches!(self, JobState::Pending | JobState::Running | JobState::Other)
    }
}

impl EndedHow {
    pub fn describe(self) -> &'static str {
        match self {
            EndedHow::Failed => "the SLURM job failed",
            EndedHow::Cancelled => "the SLURM job was cancelled",
            EndedHow::Timeout => "the SLURM job hit its time limit (resources.time_min)",
            EndedHow::OutOfMemory => "the SLURM job ran out of memory (resources.mem_mb)",
            EndedHow::NodeFail => "the SLURM node failed",
            EndedHow::Preempted => "the SLURM job was preempted",
            EndedHow::BootFail => "the SLURM node failed to boot",
            EndedHow::Deadline => "the SLURM job missed its deadline",
        }
    }
}

/// The pending reason SLURM gives a job whose dependency failed.
pub fn dependency_never_satisfied(reason: &str) -> bool {
    reason.contains("DependencyNeverSatisfied")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        assert_eq!(JobState::parse("PENDING"), JobState::Pending);
        assert_eq!(JobState::parse("COMPLETING"), JobState::Running);
        assert_eq!(JobState::parse("CANCELLED+"), JobState::Ended(EndedHow::Cancelled));
        assert!(JobState::Pending.is_live());
        assert!(!JobState::Completed.is_live());
    }
}
