use crate::compiler::instructions::Instruction;
use crate::error::{Error, ErrorKind};

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// Helper for tracking fuel consumption
pub struct FuelTracker {
    // The initial fuel level.
    initial: u64,
    // This should be an AtomicI64 but sadly 32bit targets do not necessarily have
    // AtomicI64 available.
    remaining: AtomicIsize,
}

impl FuelTracker {
    /// Creates a new fuel tracker.
    ///
    /// The fuel tracker is always wrapped in an `Arc` so that it can be
    /// shared across nested invocations of the template evaluation.
    pub fn new(fuel: u64) -> Arc<FuelTracker> {
        Arc::new(FuelTracker {
            initial: fuel,
            remaining: AtomicIsize::new(fuel as isize),
        })
    }

    /// Tracks an instruction.  If it runs out of fuel an error is returned.
    pub fn track(&self, instr: &Instruction) -> Result<(), Error> {
        let fuel_to_consume = fuel_for_instruction(instr);
        if fuel_to_consume != 0 {
            let old_fuel = self.remaining.fetch_sub(fuel_to_consume, Ordering::Relaxed);
            if old_fuel - fuel_to_consume <= 0 {
                return Err(Error::from(ErrorKind::OutOfFuel));
            }
        }
        Ok(())
    }

    /// Consumes `n` units for work done outside an instruction (patched: see PATCHES.md).
    pub fn consume(&self, n: u64) -> Result<(), Error> {
        let n = n.min(isize::MAX as u64) as isize;
        if n != 0 {
            let old_fuel = self.remaining.fetch_sub(n, Ordering::Relaxed);
            if old_fuel.saturating_sub(n) <= 0 {
                return Err(Error::from(ErrorKind::OutOfFuel));
            }
        }
        Ok(())
    }

    /// True once the fuel is used up (patched).
    pub fn exhausted(&self) -> bool {
        self.remaining.load(Ordering::Relaxed) <= 0
    }

    /// Returns the remaining fuel.
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Relaxed) as _
    }

    /// Returns the consumed fuel.
    pub fn consumed(&self) -> u64 {
        self.initial.saturating_sub(self.remaining())
    }
}

std::thread_local! {
    // The tracker of the evaluation running on this thread, so that iteration and value
    // building inside filters and operators are paid for too (patched).
    static CURRENT: std::cell::RefCell<Option<Arc<FuelTracker>>> = const { std::cell::RefCell::new(None) };
}

/// Makes `tracker` the current one until the guard drops (patched).
pub(crate) fn enter(tracker: Option<Arc<FuelTracker>>) -> CurrentGuard {
    CurrentGuard(CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), tracker)))
}

pub(crate) struct CurrentGuard(Option<Arc<FuelTracker>>);

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Charges `n` units to the current evaluation, if one tracks fuel (patched).
pub fn consume_current(n: u64) -> Result<(), Error> {
    CURRENT.with(|c| match &*c.borrow() {
        Some(tracker) => tracker.consume(n),
        None => Ok(()),
    })
}

/// Charges one unit per item iterated; false once the fuel is used up (patched).
pub(crate) fn charge_item() -> bool {
    consume_current(1).is_ok()
}

/// An iterator that pays one unit per item and ends when the fuel is gone (patched). The
/// evaluation then fails with `OutOfFuel` (see `Vm::eval` and `with_fuel`), so a shortened
/// iteration never passes for a whole one.
pub(crate) struct Charged<I>(pub I);

impl<I: Iterator> Iterator for Charged<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        if !charge_item() {
            return None;
        }
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<I: DoubleEndedIterator> DoubleEndedIterator for Charged<I> {
    fn next_back(&mut self) -> Option<I::Item> {
        if !charge_item() {
            return None;
        }
        self.0.next_back()
    }
}

/// Runs `f` with its own fuel current on this thread, for work done on a template's result
/// outside the evaluation (serializing it); returns whether the fuel ran out (patched).
pub fn with_fuel<R>(fuel: u64, f: impl FnOnce() -> R) -> (R, bool) {
    let tracker = FuelTracker::new(fuel);
    let _current = enter(Some(tracker.clone()));
    let rv = f();
    (rv, tracker.exhausted())
}

/// How much fuel does an instruction consume?
fn fuel_for_instruction(instruction: &Instruction) -> isize {
    match instruction {
        Instruction::BeginCapture(_)
        | Instruction::PushLoop(_)
        | Instruction::PushDidNotIterate
        | Instruction::PushWith
        | Instruction::PopFrame
        | Instruction::PopLoopFrame
        | Instruction::DupTop
        | Instruction::DiscardTop
        | Instruction::PushAutoEscape
        | Instruction::PopAutoEscape => 0,
        #[cfg(feature = "multi_template")]
        Instruction::ExportLocals => 0,
        #[cfg(feature = "macros")]
        Instruction::LoadBlocks | Instruction::BuildMacro(..) | Instruction::Return => 0,
        _ => 1,
    }
}
