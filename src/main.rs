//! The `certroll` binary: parse arguments, run, turn the outcome into an exit code.

// Rolls and issues allocate a few small objects per device on several threads at once; the
// system allocator spent about 15% of a 100,000-device roll in malloc and free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    certroll::cli::main()
}

/// Turns transparent huge pages off for this process (and what it runs), as mimalloc's own
/// `MIMALLOC_ALLOW_THP=0` does; that option is read from the environment before `main`, so the
/// binary makes the same `prctl(PR_SET_THP_DISABLE)` call itself.
///
/// mimalloc asks for huge pages on its arenas; each page it purges and takes back later then
/// faults in as a 2 MiB page the kernel zeroes. On a 10,000-enrollment bulk roll against
/// `certroll serve` that zeroing was 17% of serve's CPU and the client's; with it gone serve
/// took 86 instead of 102 µs an enrollment (`perf record` of `measure_roll`). A kernel without
/// the call leaves things as they were.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
