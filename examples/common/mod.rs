//! What the load generators (`calls_load`, `hub_load`) share: their own CPU time and
//! percentiles. A module, not an example (Cargo only takes `examples/*.rs` and
//! `examples/*/main.rs` as examples).

/// This process's CPU time (user + system, all threads), in microseconds.
pub fn own_cpu_us() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is given; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so it filled the struct (and zeroed is valid anyway).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The `p`th percentile of sorted values (nearest rank), 0 if there are none.
pub fn percentile<T: Copy + Into<u64>>(sorted: &[T], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].into()
}
