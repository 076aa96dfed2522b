//! The one place where a stage's [`BackendChoice`] becomes a concrete burn backend.
//!
//! CPU is `Autodiff<NdArray>`; with the `cuda` feature, `Autodiff<Cuda>`. A stage writes
//! its tensor work once as a [`BackendTask`], generic over an autodiff backend, and
//! [`dispatch`] runs it on the chosen device.

use burn::tensor::backend::AutodiffBackend;

use crate::kind::{BackendChoice, StageError};

/// CPU backend used for training and sampling.
pub type Cpu = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

/// GPU backend (CUDA, compiled with the `cuda` feature).
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Autodiff<burn::backend::Cuda>;

/// Work that runs on whichever backend the orchestrator chose.
pub trait BackendTask {
    type Output;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output;
}

/// Runs `task` on the backend named by `choice`.
pub fn dispatch<T: BackendTask>(choice: BackendChoice, task: T) -> Result<T::Output, StageError> {
    match choice {
        BackendChoice::Cpu => Ok(task.run::<Cpu>(&Default::default())),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => Ok(task.run::<Gpu>(&Default::default())),
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Cuda => Err(StageError::Param(
            "the CUDA backend was requested but this build has no `cuda` feature".to_owned(),
        )),
    }
}
