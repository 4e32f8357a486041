//! CPU time of the calling thread, the clock QEMU (RUSAGE_THREAD) and cryptsetup (getrusage)
//! calibrate PBKDF2 with: on a loaded machine wall time would undercount the iterations.

/// Nanoseconds of CPU time this thread has run (Linux `/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// A monotonic nanosecond clock for PBKDF2 calibration: thread CPU time where the system
/// reports it, wall time otherwise.
pub fn calibration_clock() -> impl FnMut() -> u64 {
    let start = std::time::Instant::now();
    let cpu = thread_cpu_ns().is_some();
    move || match (cpu, thread_cpu_ns()) {
        (true, Some(ns)) => ns,
        _ => start.elapsed().as_nanos() as u64,
    }
}
