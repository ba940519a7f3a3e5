//! Heap allocations counted per core: [`CountingAllocator`] wraps the system allocator and
//! counts every allocation (reallocations included) and its bytes in the slot of the thread
//! that makes it. A core's executor thread counts in its own slot ([`count_as_core`]); every
//! other thread (the main thread, the signal thread, helper threads) in a shared one.
//! `GetNodeStatus` reports them, so a benchmark can prove "no allocation per record on the
//! hot path" (STYLE.md habit 6) rather than promise it.
//!
//! Cheap by construction: the slot index is a const-initialised thread-local (no lazy
//! registration, no destructor, so it never allocates and is readable while a thread exits),
//! each slot sits on its own cache line, and a core's slot has one writer, which adds with a
//! plain load and store (no locked instruction). Only the shared slot uses `fetch_add`.
//! Counting never changes what the system allocator is asked.
//!
//! The counter is the binary's global allocator (`server/src/main.rs`); in a process that
//! installs another (tests linking the library), nothing is counted and the status says so.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Cores counted apart; threads of cores beyond it count in the shared slot.
pub const COUNTED_CORES_MAX: usize = 256;

/// The slot of every thread that is no core's executor.
const SHARED_SLOT: usize = COUNTED_CORES_MAX;

/// One slot's counters, alone on a cache line (no false sharing between cores).
#[repr(align(64))]
struct Slot {
    allocations: AtomicU64,
    bytes: AtomicU64,
    /// A core's executor thread counts here (single writer); at most one thread claims it.
    claimed: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            allocations: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            claimed: AtomicBool::new(false),
        }
    }
}

static SLOTS: [Slot; COUNTED_CORES_MAX + 1] = [const { Slot::new() }; COUNTED_CORES_MAX + 1];

thread_local! {
    /// This thread's slot.
    static THREAD_SLOT: Cell<usize> = const { Cell::new(SHARED_SLOT) };
}

/// Allocations and their bytes counted in one slot since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocationCounts {
    /// Allocations, reallocations included.
    pub allocations: u64,
    /// Bytes those allocations asked for (a reallocation counts its new size).
    pub bytes: u64,
}

/// Makes the calling thread count its allocations as core `core`'s. Call once, first thing on
/// the core's executor thread. Returns false (the thread keeps counting in the shared slot)
/// for a core beyond [`COUNTED_CORES_MAX`] or one whose slot another thread already claimed
/// (a second node in the same process, as tests run them).
pub fn count_as_core(core: usize) -> bool {
    let Some(slot) = SLOTS.get(core).filter(|_| core < COUNTED_CORES_MAX) else {
        return false;
    };
    if slot.claimed.swap(true, Ordering::AcqRel) {
        return false;
    }
    THREAD_SLOT.with(|own| own.set(core));
    true
}

/// Whether the counting allocator is this process's allocator (it has counted anything).
pub fn counting() -> bool {
    SLOTS
        .iter()
        .any(|slot| slot.allocations.load(Ordering::Relaxed) > 0)
}

/// What core `core`'s thread allocated, if the counting allocator is installed and the core
/// counts in a slot of its own.
pub fn core_counts(core: usize) -> Option<AllocationCounts> {
    let slot = SLOTS.get(core).filter(|_| core < COUNTED_CORES_MAX)?;
    if !counting() || !slot.claimed.load(Ordering::Acquire) {
        return None;
    }
    Some(read(slot))
}

/// What every thread that is no core's executor allocated, if the counting allocator is
/// installed.
pub fn other_counts() -> Option<AllocationCounts> {
    counting().then(|| read(&SLOTS[SHARED_SLOT]))
}

fn read(slot: &Slot) -> AllocationCounts {
    AllocationCounts {
        allocations: slot.allocations.load(Ordering::Relaxed),
        bytes: slot.bytes.load(Ordering::Relaxed),
    }
}

/// Counts one allocation of `bytes` in the calling thread's slot.
#[inline]
fn count(bytes: usize) {
    // `try_with` fails only while the thread-local is being torn down, which a const, drop-free
    // one never is; the shared slot is the safe answer anyway.
    let index = THREAD_SLOT.try_with(Cell::get).unwrap_or(SHARED_SLOT);
    let slot = &SLOTS[index.min(SHARED_SLOT)];
    if index == SHARED_SLOT {
        slot.allocations.fetch_add(1, Ordering::Relaxed);
        slot.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    } else {
        // The core's thread is the slot's only writer (`count_as_core`): a plain add is exact.
        let allocations = slot.allocations.load(Ordering::Relaxed);
        slot.allocations.store(allocations + 1, Ordering::Relaxed);
        let total = slot.bytes.load(Ordering::Relaxed);
        slot.bytes.store(total + bytes as u64, Ordering::Relaxed);
    }
}

/// The system allocator, counting (see the module's documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; counting touches only atomics
// and a const thread-local, and never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the allocator installed (the test process has the default one) nothing is
    /// reported; a core's slot is claimed once only; driven directly, the allocator counts
    /// each allocation and its bytes in the calling core's slot. One test, because driving
    /// the allocator turns counting on for the whole process.
    #[test]
    #[allow(unsafe_code)]
    fn counts_in_the_calling_cores_slot_and_claims_it_once() {
        assert!(!counting());
        assert_eq!(other_counts(), None);
        let core = COUNTED_CORES_MAX - 1;
        let counted = std::thread::spawn(move || {
            assert!(count_as_core(core));
            let layout = Layout::from_size_align(100, 8).expect("layout");
            // SAFETY: a valid non-zero layout; the block is resized and freed with its layout.
            unsafe {
                let block = CountingAllocator.alloc(layout);
                assert!(!block.is_null());
                let block = CountingAllocator.realloc(block, layout, 300);
                assert!(!block.is_null());
                let grown = Layout::from_size_align(300, 8).expect("layout");
                CountingAllocator.dealloc(block, grown);
            }
            read(&SLOTS[core])
        })
        .join()
        .expect("thread");
        assert_eq!(
            counted,
            AllocationCounts {
                allocations: 2,
                bytes: 400
            }
        );
        let second = std::thread::spawn(move || count_as_core(core))
            .join()
            .expect("thread");
        assert!(!second, "a core's slot has one writer");
        assert!(!count_as_core(COUNTED_CORES_MAX));
        assert!(counting());
        assert_eq!(core_counts(core), Some(counted));
        assert_eq!(core_counts(COUNTED_CORES_MAX - 2), None, "never claimed");
    }
}
