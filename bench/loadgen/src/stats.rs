//! What the load generators share to measure and report: their own CPU time, percentiles,
//! and a count of errors of which the first few are shown.

/// How many errors a report prints (all are counted).
pub const SHOWN_ERRORS: usize = 10;

/// Errors: every one counted, the first [`SHOWN_ERRORS`] kept to be printed.
#[derive(Default)]
pub struct Errors {
    pub count: u64,
    pub shown: Vec<String>,
}

impl Errors {
    /// Counts an error and keeps its message if there is room.
    pub fn add(&mut self, message: String) {
        self.count += 1;
        self.show(message);
    }

    /// Keeps a message if there is room, without counting it (it is counted elsewhere).
    pub fn show(&mut self, message: String) {
        if self.shown.len() < SHOWN_ERRORS {
            self.shown.push(message);
        }
    }

    /// Adds another's count and, while there is room, its messages.
    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        other.shown.into_iter().for_each(|m| self.show(m));
    }
}

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

/// Microseconds as milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v[..1], 99.0), 1);
        assert_eq!(percentile::<u64>(&[], 50.0), 0);
    }

    #[test]
    fn errors_are_all_counted_and_a_few_shown() {
        let mut a = Errors::default();
        for i in 0..SHOWN_ERRORS + 3 {
            a.add(i.to_string());
        }
        let mut b = Errors::default();
        b.add("b".into());
        b.merge(a);
        assert_eq!(b.count, SHOWN_ERRORS as u64 + 4);
        assert_eq!(b.shown.len(), SHOWN_ERRORS);
        assert_eq!(b.shown[0], "b");
    }
}
