//! Flushing subnormal numbers (x86 FTZ/DAZ) for the length of one computation.
//!
//! Numbers below f32's normal range are computed by microcode on x86, many times slower
//! than normal ones. Some of a wide flow's numbers fall there after a few hundred steps
//! (an MNIST d_E 32 flow slows from 1.0 to 2.7 s a step at about step 250, and stays at
//! 1.0 s with them flushed). Treating them as zero can change results, so it is a choice
//! (`train-flow`'s `flush_subnormals`), off by default: cached flows stay valid.

/// Runs `f` with subnormal inputs and results treated as zero on this thread and every
/// thread of the current rayon pool (when `enabled` and on x86-64), restoring each
/// thread's previous mode afterwards.
pub fn flushing<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    if !enabled {
        return f();
    }
    let before = mode::get();
    mode::set(before | mode::FLUSH);
    rayon::broadcast(|_| mode::set(mode::get() | mode::FLUSH));
    let result = f();
    rayon::broadcast(|_| mode::set(before));
    mode::set(before);
    result
}

#[cfg(target_arch = "x86_64")]
mod mode {
    /// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
    pub const FLUSH: u32 = 0x8040;
    #[allow(deprecated)]
    pub fn get() -> u32 {
        // SAFETY: reading MXCSR has no preconditions on x86-64 (SSE is always present).
        unsafe { std::arch::x86_64::_mm_getcsr() }
    }
    #[allow(deprecated)]
    pub fn set(value: u32) {
        // SAFETY: only the FTZ and DAZ bits differ from a value read from MXCSR.
        unsafe { std::arch::x86_64::_mm_setcsr(value) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod mode {
    pub const FLUSH: u32 = 0;
    pub fn get() -> u32 {
        0
    }
    pub fn set(_: u32) {}
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::hint::black_box;

    use super::flushing;

    fn quarter_of_smallest_normal() -> f32 {
        black_box(f32::MIN_POSITIVE) / black_box(4.0)
    }

    #[test]
    fn subnormals_are_zero_inside_and_back_after() {
        assert!(quarter_of_smallest_normal() > 0.0, "a subnormal result by default");
        assert_eq!(flushing(true, quarter_of_smallest_normal), 0.0);
        assert!(flushing(false, quarter_of_smallest_normal) > 0.0);
        assert!(quarter_of_smallest_normal() > 0.0, "the mode is restored");
    }
}
