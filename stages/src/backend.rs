//! The one place where a stage's [`BackendChoice`] becomes a concrete burn backend.
//!
//! CPU is `Autodiff<NdArray>`; with the `cuda` feature, `Autodiff<Cuda>`. A stage writes
//! its tensor work once as a [`BackendTask`], generic over an autodiff backend, and
//! [`dispatch`] runs it on the chosen device; an [`EngineTask`] also has a fused CPU form,
//! and [`dispatch_engine`] picks between the two.

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

/// Runs `task` on the backend named by `choice`; a CUDA run first checks that the driver,
/// NVRTC and a device are there, so a machine without them fails with a message instead
/// of a panic inside the first kernel.
pub fn dispatch<T: BackendTask>(choice: BackendChoice, task: T) -> Result<T::Output, StageError> {
    match choice {
        BackendChoice::Cpu => Ok(task.run::<Cpu>(&Default::default())),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => {
            cuda_devices().map_err(StageError::Failed)?;
            Ok(task.run::<Gpu>(&Default::default()))
        }
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Cuda => Err(StageError::Failed(cuda_devices().expect_err("no cuda feature"))),
    }
}

/// Relational-transformer work with two forms: the burn module (any backend) and the
/// fused CPU engine (`rt::fused`), which computes the same model several times faster
/// than the tensor library on a CPU.
pub trait EngineTask: BackendTask {
    fn run_fused(self) -> Self::Output;
}

/// The one engine choice: the fused engine on the CPU, the burn module on CUDA.
pub fn dispatch_engine<T: EngineTask>(choice: BackendChoice, task: T) -> Result<T::Output, StageError> {
    match choice {
        BackendChoice::Cpu => Ok(task.run_fused()),
        _ => dispatch(choice, task),
    }
}

/// The number of CUDA devices the driver reports, or why CUDA cannot run here: the driver
/// library (`libcuda`) or the runtime compiler burn-cuda builds its kernels with
/// (`libnvrtc`) cannot be loaded, the driver does not start, or it sees no device.
#[cfg(feature = "cuda")]
pub fn cuda_devices() -> Result<usize, String> {
    use cudarc::{driver, nvrtc};
    let missing = |lib: &str, what: &str| {
        let names = cudarc::get_lib_name_candidates(lib);
        let path = std::env::var("LD_LIBRARY_PATH").map_or("unset".to_owned(), |p| format!("`{p}`"));
        format!(
            "{what} was not found: no library named {} or {} (or {} other names) on the loader path (LD_LIBRARY_PATH is {path})",
            names[0],
            names.last().map_or("", String::as_str),
            names.len().saturating_sub(2),
        )
    };
    // SAFETY: only opens the libraries to see whether they load.
    if !unsafe { driver::sys::is_culib_present() } {
        return Err(missing("cuda", "the CUDA driver library (libcuda, installed with the NVIDIA driver)"));
    }
    if !unsafe { nvrtc::sys::is_culib_present() } {
        return Err(missing("nvrtc", "NVRTC (libnvrtc, the CUDA runtime compiler that burn-cuda compiles its kernels with)"));
    }
    driver::result::init().map_err(|e| format!("the CUDA driver did not start: {e:?}"))?;
    match driver::result::device::get_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err("the CUDA driver sees no device (CUDA_VISIBLE_DEVICES may hide them)".to_owned()),
        Err(e) => Err(format!("the CUDA driver could not count its devices: {e:?}")),
    }
}

/// Without the `cuda` feature there is no CUDA backend to probe.
#[cfg(not(feature = "cuda"))]
pub fn cuda_devices() -> Result<usize, String> {
    Err("this wfpipe was built without CUDA; build it with `--features cuda` (README, section GPUs)".to_owned())
}
