//! A step's log in memory: bounded, compact, and fast to append to and index.
//!
//! Lines live in large byte chunks with an end offset per line, so a million 100-byte lines
//! cost about 100 MB rather than a heap allocation each. When the store is full the oldest
//! chunk is dropped whole; the full log is always on disk.

use std::collections::VecDeque;

/// Default number of lines kept in memory per step.
pub const DEFAULT_CAPACITY: usize = 100_000;

const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
struct Chunk {
    /// Global index of the chunk's first line.
    first: u64,
    bytes: Vec<u8>,
    /// End offset in `bytes` of each line.
    ends: Vec<u32>,
}

impl Chunk {
    fn line(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        // Lines are pushed as `&str`, so the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[start..end]).ok()
    }
}

/// The lines of one step's log.
#[derive(Debug)]
pub struct LogStore {
    capacity: usize,
    chunks: VecDeque<Chunk>,
    /// Lines ever pushed (the global index of the next line).
    pushed: u64,
}

impl Default for LogStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl LogStore {
    pub fn with_capacity(capacity: usize) -> Self {
        LogStore {
            capacity: capacity.max(1),
            chunks: VecDeque::new(),
            pushed: 0,
        }
    }

    pub fn push(&mut self, line: &str) {
        // Chunks are bounded in bytes and in lines, so eviction stays close to `capacity`.
        let max_lines = (self.capacity / 8).max(1024);
        let needs_chunk = self.chunks.back().is_none_or(|c| {
            !c.ends.is_empty()
                && (c.bytes.len() + line.len() > CHUNK_BYTES || c.ends.len() >= max_lines)
        });
        if needs_chunk {
            self.chunks.push_back(Chunk {
                first: self.pushed,
                bytes: Vec::with_capacity(CHUNK_BYTES.max(line.len())),
                ends: Vec::with_capacity(max_lines.min(CHUNK_BYTES / 64)),
            });
        }
        if let Some(chunk) = self.chunks.back_mut() {
            chunk.bytes.extend_from_slice(line.as_bytes());
            chunk.ends.push(chunk.bytes.len() as u32);
        }
        self.pushed += 1;
        // Drop whole chunks while what remains still holds at least `capacity` lines.
        while self.chunks.len() > 1 {
            let oldest = self.chunks.front().map_or(0, |c| c.ends.len());
            if self.len() - oldest >= self.capacity {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
    }

    /// Lines in memory.
    pub fn len(&self) -> usize {
        (self.pushed - self.first_index()) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines pushed but no longer in memory (they are in the log file).
    pub fn evicted(&self) -> u64 {
        self.first_index()
    }

    fn first_index(&self) -> u64 {
        self.chunks.front().map_or(self.pushed, |c| c.first)
    }

    /// The `i`-th line in memory (0 is the oldest kept).
    pub fn get(&self, i: usize) -> Option<&str> {
        let global = self.first_index() + i as u64;
        let at = self
            .chunks
            .partition_point(|c| c.first <= global)
            .checked_sub(1)?;
        let chunk = self.chunks.get(at)?;
        chunk.line((global - chunk.first) as usize)
    }

    /// The next line at or after `from` (or at or before, going back) containing `needle`.
    pub fn find(&self, needle: &str, from: usize, forward: bool) -> Option<usize> {
        if needle.is_empty() || self.is_empty() {
            return None;
        }
        let len = self.len();
        let matches = |i: usize| self.get(i).is_some_and(|l| l.contains(needle));
        if forward {
            (from.min(len)..len).find(|&i| matches(i))
        } else {
            (0..=from.min(len - 1)).rev().find(|&i| matches(i))
        }
    }

    /// Bytes held, for the memory budget.
    pub fn heap_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.bytes.capacity() + c.ends.capacity() * 4)
            .sum()
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.pushed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_in_order_and_indexes_across_chunks() {
        let mut store = LogStore::with_capacity(1_000_000);
        let long = "x".repeat(300_000);
        for i in 0..10 {
            store.push(&format!("{i}:{long}"));
        }
        store.push("last");
        assert_eq!(store.len(), 11);
        assert!(store.get(3).is_some_and(|l| l.starts_with("3:")));
        assert_eq!(store.get(10), Some("last"));
        assert_eq!(store.get(11), None);
        assert!(store.chunks.len() > 2);
    }

    #[test]
    fn evicts_oldest_whole_chunks_beyond_capacity_and_says_so() {
        let mut store = LogStore::with_capacity(1000);
        let line = "y".repeat(1000);
        for _ in 0..10_000 {
            store.push(&line);
        }
        assert!(
            store.len() >= 1000 && store.len() <= 1000 + 1024,
            "{}",
            store.len()
        );
        assert_eq!(store.evicted() + store.len() as u64, 10_000);
        assert_eq!(store.get(store.len() - 1).map(str::len), Some(1000));
    }

    #[test]
    fn finds_forward_and_backward() {
        let mut store = LogStore::default();
        for line in ["a", "error one", "b", "error two", "c"] {
            store.push(line);
        }
        assert_eq!(store.find("error", 0, true), Some(1));
        assert_eq!(store.find("error", 2, true), Some(3));
        assert_eq!(store.find("error", 2, false), Some(1));
        assert_eq!(store.find("nope", 0, true), None);
    }
}
