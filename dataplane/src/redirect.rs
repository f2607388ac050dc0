//! Redirects from one port's worker to another's, with no heap buffer per frame and one copy.
//!
//! Every worker that can be redirected to (its port has an interface index) lends buffers of
//! its own queue — AF_XDP UMEM chunks, DPDK mbufs ([`Queue::lend`]) — to every worker of the
//! other ports, through one [`Lane`] per (target, source) pair: a bounded channel of loans
//! towards the source and one of filled buffers back. A source copies a redirected packet
//! straight into a loan ([`Lend::fill`]: the only copy) and sends it back; the target takes it
//! as a frame of its own ([`Queue::accept`]) and transmits it with its next batch. The channels
//! are `std::sync::mpsc::sync_channel`s: their slots are allocated once, at set-up.
//!
//! Accounting: a lane never has more than `depth` loans out (in the loan channel, in the
//! source's hands for the length of one `fill`, or in the channel back), so both channels have
//! room for all of them and a send on either never fails. At shutdown ([`Quiesce`]) every
//! worker first stops redirecting, then hands its unused loans back, then every target takes
//! back what its lanes hold: every buffer is sent or freed, none is left lent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use crate::backend::queue::{Lend, Queue};

/// The target side of one (target, source) pair.
#[derive(Debug)]
pub struct Lane<L> {
    loans: SyncSender<L>,
    back: Receiver<L>,
    /// Loans not yet back.
    out: usize,
}

/// The source side of one (target, source) pair.
#[derive(Debug)]
pub struct Route<L> {
    loans: Receiver<L>,
    back: SyncSender<L>,
}

/// A worker's lanes as a target: the buffers it lends and takes back.
#[derive(Debug)]
pub struct Inbox<L> {
    lanes: Vec<Lane<L>>,
    depth: usize,
}

impl<L> Default for Inbox<L> {
    fn default() -> Self {
        Self { lanes: Vec::new(), depth: 0 }
    }
}

/// A worker's routes as a source, by the interface index of the target port (a port may have
/// several workers: a frame goes to one of them, by a hash).
#[derive(Debug)]
pub struct Outbox<L> {
    ports: Vec<(u32, Vec<Route<L>>)>,
}

impl<L> Default for Outbox<L> {
    fn default() -> Self {
        Self { ports: Vec::new() }
    }
}

/// Why a redirect to another port did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No configured port has that interface index.
    NoPort,
    /// The target worker has no loan out to this one right now: it is behind.
    Full,
    /// The packet does not fit the target's buffers.
    TooBig,
}

/// Builds the lanes between workers on the ports `ifindexes` (one entry per worker, in worker
/// order; 0: a port that cannot be redirected to), each lane `depth` loans deep. Returns one
/// (inbox, outbox) per worker. Workers of the same port get no lane between them: a redirect to
/// the frame's own port goes out of its own queue.
#[must_use]
pub fn wire<L>(ifindexes: &[u32], depth: usize) -> Vec<(Inbox<L>, Outbox<L>)> {
    let mut boxes: Vec<(Inbox<L>, Outbox<L>)> =
        ifindexes.iter().map(|_| (Inbox { lanes: Vec::new(), depth }, Outbox::default())).collect();
    for (t, &to) in ifindexes.iter().enumerate() {
        if to == 0 {
            continue;
        }
        for (s, &from) in ifindexes.iter().enumerate() {
            if from == to {
                continue;
            }
            let (loans, loans_rx) = sync_channel(depth);
            let (back_tx, back) = sync_channel(depth);
            boxes[t].0.lanes.push(Lane { loans, back, out: 0 });
            let outbox = &mut boxes[s].1;
            let route = Route { loans: loans_rx, back: back_tx };
            match outbox.ports.iter_mut().find(|(i, _)| *i == to) {
                Some((_, v)) => v.push(route),
                None => outbox.ports.push((to, vec![route])),
            }
        }
    }
    boxes
}

impl<L: Lend> Outbox<L> {
    /// Whether a port with interface `ifindex` can be redirected to from here.
    #[must_use]
    pub fn has_port(&self, ifindex: u32) -> bool {
        self.ports.iter().any(|(i, _)| *i == ifindex)
    }

    /// Copies `packet` into a buffer of a worker (chosen by `hash`) of the port with interface
    /// `ifindex`, for it to send.
    ///
    /// # Errors
    /// [`Miss`]: no such port, no loan from the target at hand, or a packet too big.
    #[inline]
    pub fn send(&self, ifindex: u32, hash: usize, packet: &[u8]) -> Result<(), Miss> {
        let (_, routes) = self.ports.iter().find(|(i, _)| *i == ifindex).ok_or(Miss::NoPort)?;
        let route = &routes[hash % routes.len()];
        let mut loan = route.loans.try_recv().map_err(|_| Miss::Full)?;
        let ok = loan.fill(packet);
        // Never full: the lane's loans all fit in the channel back (see the module's doc).
        let _ = route.back.try_send(loan);
        if ok { Ok(()) } else { Err(Miss::TooBig) }
    }

    /// At shutdown, once no worker redirects any more: every loan not used goes back unfilled.
    pub fn give_back(&self) {
        for (_, routes) in &self.ports {
            for r in routes {
                while let Ok(loan) = r.loans.try_recv() {
                    let _ = r.back.try_send(loan);
                }
            }
        }
    }
}

impl<L: Lend> Inbox<L> {
    /// Whether this worker lends to anyone.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Takes up to `max` filled buffers back as frames to send (into `tx`), frees unfilled
    /// ones, and tops every lane up to its depth with new loans. Returns the filled buffers
    /// that could not be taken as frames (dropped).
    #[inline]
    pub fn take<Q: Queue<Lent = L>>(&mut self, queue: &mut Q, tx: &mut Vec<Q::Frame>, max: usize) -> u64 {
        let mut taken = 0;
        let mut lost = 0;
        for lane in &mut self.lanes {
            while taken < max {
                let loan = match lane.back.try_recv() {
                    Ok(l) => l,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                };
                lane.out -= 1;
                if loan.filled() {
                    match queue.accept(loan) {
                        Some(f) => {
                            tx.push(f);
                            taken += 1;
                        }
                        None => lost += 1,
                    }
                } else {
                    queue.reclaim(loan);
                }
            }
            while lane.out < self.depth {
                let Some(loan) = queue.lend() else { break };
                match lane.loans.try_send(loan) {
                    Ok(()) => lane.out += 1,
                    Err(TrySendError::Full(l) | TrySendError::Disconnected(l)) => {
                        queue.reclaim(l);
                        break;
                    }
                }
            }
        }
        lost
    }

    /// At shutdown, after every source gave its loans back: takes back everything, filled
    /// buffers as frames to send (into `tx`). Returns the loans still out (0 unless a source
    /// did not stop in time) and the filled buffers that could not be taken.
    pub fn close<Q: Queue<Lent = L>>(&mut self, queue: &mut Q, tx: &mut Vec<Q::Frame>) -> (usize, u64) {
        let mut lost = 0;
        for lane in &mut self.lanes {
            while let Ok(loan) = lane.back.try_recv() {
                lane.out -= 1;
                if loan.filled() {
                    match queue.accept(loan) {
                        Some(f) => tx.push(f),
                        None => lost += 1,
                    }
                } else {
                    queue.reclaim(loan);
                }
            }
        }
        (self.lanes.iter().map(|l| l.out).sum(), lost)
    }
}

/// The shutdown rendezvous of the workers that share lanes: each waits (1 s at most) until all
/// have reached a phase.
#[derive(Debug)]
pub struct Quiesce {
    arrived: AtomicUsize,
    total: usize,
}

impl Quiesce {
    #[must_use]
    pub fn new(total: usize) -> Self {
        Self { arrived: AtomicUsize::new(0), total }
    }

    /// Marks this worker as having reached `phase` (1, 2, ...) and waits for the others;
    /// `false` when they did not all arrive within a second.
    pub fn arrive(&self, phase: usize) -> bool {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let want = self.total * phase;
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.arrived.load(Ordering::Acquire) < want {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}
