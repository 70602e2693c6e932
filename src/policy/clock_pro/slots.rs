//! The clock's list (insertion order, circular) and the slot storage of
//! resident entries and ghosts, with their free lists.

use super::*;

impl<P: Default> ClockPro<P> {
    pub(super) fn link_new(
        &mut self,
        (hash, weight, state, flags): (u64, u32, u8, u8),
        payload: P,
    ) {
        let resident = Resident {
            payload,
            referenced: AtomicBool::new(false),
            flags,
            weight,
        };
        let idx = self.alloc_resident(Meta::new(hash, weight, state), resident);
        self.last_admitted = idx;
        self.link_at_head(idx);
        self.table
            .insert_unique(hash, idx, |&i| hash_of(&self.slot_meta, &self.ghosts, i));
        let w = u64::from(weight);
        self.counts.resident += 1;
        self.counts.resident_weight += w;
        if state & HOT != 0 {
            self.counts.hot += 1;
            self.counts.hot_weight += w;
        }
    }

    /// Unlinks, unindexes and frees any entry.
    pub(super) fn remove_idx(&mut self, idx: Idx) -> Option<P> {
        let hash = self.meta(idx).hash;
        self.unlink(idx);
        self.table_remove(hash, idx);
        if idx & GHOST != 0 {
            self.counts.ghosts -= 1;
            self.free_ghost_slot(idx);
            None
        } else {
            let (meta, payload, _) = self.free_resident_slot(idx);
            let w = u64::from(meta.weight);
            self.counts.resident -= 1;
            self.counts.resident_weight -= w;
            if meta.is_hot() {
                self.counts.hot -= 1;
                self.counts.hot_weight -= w;
            }
            Some(payload)
        }
    }

    pub(super) fn link_at_head(&mut self, idx: Idx) {
        if self.head == NIL {
            let meta = self.meta_mut(idx);
            meta.prev = idx;
            meta.next = idx;
            self.head = idx;
            self.hand_hot = idx;
            self.hand_cold = idx;
            self.hand_test = idx;
            return;
        }
        let head = self.head;
        let after = self.meta(head).next;
        let meta = self.meta_mut(idx);
        meta.prev = head;
        meta.next = after;
        self.meta_mut(head).next = idx;
        self.meta_mut(after).prev = idx;
        self.head = idx;
    }

    /// Takes `idx` off the clock; hands on it move to the next entry.
    pub(super) fn unlink(&mut self, idx: Idx) {
        let (prev, next) = {
            let m = self.meta(idx);
            (m.prev, m.next)
        };
        if next == idx {
            self.head = NIL;
            self.hand_hot = NIL;
            self.hand_cold = NIL;
            self.hand_test = NIL;
            return;
        }
        self.meta_mut(prev).next = next;
        self.meta_mut(next).prev = prev;
        if self.head == idx {
            self.head = prev;
        }
        for hand in [&mut self.hand_hot, &mut self.hand_cold, &mut self.hand_test] {
            if *hand == idx {
                *hand = next;
            }
        }
    }

    pub(super) fn move_to_head(&mut self, idx: Idx) {
        self.unlink(idx);
        self.link_at_head(idx);
    }

    /// Puts `new` in `old`'s place on the clock and in the table.
    pub(super) fn replace(&mut self, old: Idx, new: Idx) {
        let (prev, next) = {
            let m = self.meta(old);
            (m.prev, m.next)
        };
        let (prev, next) = if next == old {
            (new, new)
        } else {
            (prev, next)
        };
        let meta = self.meta_mut(new);
        meta.prev = prev;
        meta.next = next;
        if next != new {
            self.meta_mut(prev).next = new;
            self.meta_mut(next).prev = new;
        }
        for hand in [
            &mut self.head,
            &mut self.hand_hot,
            &mut self.hand_cold,
            &mut self.hand_test,
        ] {
            if *hand == old {
                *hand = new;
            }
        }
        let hash = self.meta(old).hash;
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == old) {
            *entry.into_mut() = new;
        }
    }

    pub(super) fn table_remove(&mut self, hash: u64, idx: Idx) {
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
    }

    // ----- slabs ---------------------------------------------------------------------

    pub(super) fn alloc_resident(&mut self, meta: Meta, resident: Resident<P>) -> Idx {
        if self.free_resident != NIL {
            let idx = self.free_resident;
            let i = idx as usize;
            self.free_resident = self.slot_meta[i].next;
            self.slot_meta[i] = meta;
            self.slots[i] = resident;
            if let Some(d) = self.deadline.get_mut(i) {
                *d.get_mut() = 0;
            }
            idx
        } else {
            let idx = self.slots.len() as Idx;
            assert!(idx < GHOST, "more than 2^31 entries in one shard");
            self.slots.push(resident);
            self.slot_meta.push(meta);
            if !self.deadline.is_empty() {
                self.deadline.push(AtomicU64::new(0));
            }
            idx
        }
    }

    /// Frees a resident slot; returns its metadata, payload and flags.
    pub(super) fn free_resident_slot(&mut self, idx: Idx) -> (Meta, P, u8) {
        if self.last_admitted == idx {
            self.last_admitted = NIL;
        }
        let i = idx as usize;
        let mut free = Meta::new(0, 0, FREE);
        free.next = self.free_resident;
        self.free_resident = idx;
        let meta = std::mem::replace(&mut self.slot_meta[i], free);
        let r = &mut self.slots[i];
        (meta, std::mem::take(&mut r.payload), r.flags)
    }

    pub(super) fn alloc_ghost(&mut self, meta: Meta) -> Idx {
        if self.free_ghost != NIL {
            let i = self.free_ghost & !GHOST;
            self.free_ghost = self.ghosts[i as usize].next;
            self.ghosts[i as usize] = meta;
            i | GHOST
        } else {
            let i = self.ghosts.len() as Idx;
            assert!(i < GHOST, "more than 2^31 ghosts in one shard");
            self.ghosts.push(meta);
            i | GHOST
        }
    }

    pub(super) fn free_ghost_slot(&mut self, idx: Idx) {
        let meta = &mut self.ghosts[(idx & !GHOST) as usize];
        meta.state = FREE;
        meta.next = self.free_ghost;
        self.free_ghost = idx;
    }
}
