//! The in-memory store: the default, for tests and short-lived processes. Holds records as bytes,
//! exactly like a durable store, so a workflow that runs here runs unchanged on disk.

use std::collections::HashMap;

use super::{
    check_lease, check_version, claim_order, claimable, effective_due, finished_instance, is_due, purge_selects, Claim,
    Commit, Count, Created, InstanceMeta, ListPage, ListQuery, Loaded, Store, StoredInstance,
};
use crate::error::{CoreError, Result};
use crate::status::Status;

struct Entry {
    meta: InstanceMeta,
    header: Vec<u8>,
    /// `(commit version, record)` in commit order.
    log: Vec<(u64, Vec<u8>)>,
    inbox: Vec<Vec<u8>>,
    /// Creation order (the listing order and its cursor).
    seq: u64,
}

/// A store that lives in this process's memory and is gone when it exits.
#[derive(Default)]
pub struct MemoryStore {
    entries: HashMap<String, Entry>,
    seq: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, id: &str) -> Result<&mut Entry> {
        self.entries.get_mut(id).ok_or_else(|| CoreError::UnknownInstance(id.to_string()))
    }
}

fn stored(e: &Entry) -> StoredInstance {
    StoredInstance { meta: e.meta.clone(), header: e.header.clone() }
}

impl Store for MemoryStore {
    fn create(&mut self, meta: &InstanceMeta, header: &[u8], records: &[Vec<u8>]) -> Result<Created> {
        if let Some(e) = self.entries.get(&meta.id) {
            return Ok(Created::Existing(stored(e)));
        }
        self.seq += 1;
        let mut meta = meta.clone();
        meta.version = 1;
        let log = records.iter().map(|r| (1, r.clone())).collect();
        self.entries
            .insert(meta.id.clone(), Entry { meta, header: header.to_vec(), log, inbox: Vec::new(), seq: self.seq });
        Ok(Created::New)
    }

    fn commit(&mut self, c: &Commit<'_>) -> Result<()> {
        let e = self.entry(c.id)?;
        check_lease(c.id, c.owner, e.meta.owner.as_deref(), e.meta.lease_until, c.updated_at)?;
        check_version(c.id, c.expected_version, e.meta.version)?;
        e.meta.version += 1;
        e.meta.status = c.status;
        e.meta.updated_at = c.updated_at;
        e.meta.due_at = effective_due(c, e.inbox.len() as u64);
        e.meta.error = c.error.map(str::to_string);
        if c.owner.is_none() || c.status.is_finished() {
            // an engine driving in its own process, or the end: no lease is left behind
            e.meta.owner = None;
            e.meta.lease_until = None;
        }
        if let Some(h) = c.header {
            e.header = h.to_vec();
        }
        let v = e.meta.version;
        e.log.extend(c.records.iter().map(|r| (v, r.clone())));
        Ok(())
    }

    fn get(&mut self, id: &str) -> Result<Option<StoredInstance>> {
        Ok(self.entries.get(id).map(stored))
    }

    fn load(&mut self, id: &str) -> Result<Option<Loaded>> {
        Ok(self.entries.get(id).map(|e| Loaded {
            meta: e.meta.clone(),
            header: e.header.clone(),
            records: e.log.iter().map(|(_, r)| r.clone()).collect(),
            signals: e.inbox.iter().enumerate().map(|(i, r)| (i as u64 + 1, r.clone())).collect(),
        }))
    }

    fn records(&mut self, id: &str, after: u64) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .entries
            .get(id)
            .map(|e| e.log.iter().filter(|(v, _)| *v > after).map(|(_, r)| r.clone()).collect())
            .unwrap_or_default())
    }

    fn list(&mut self, q: &ListQuery) -> Result<ListPage> {
        let before = match &q.cursor {
            None => u64::MAX,
            Some(c) => c.parse::<u64>().map_err(|_| CoreError::InvalidState(format!("invalid list cursor {c:?}")))?,
        };
        let mut hits: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| e.seq < before)
            .filter(|e| q.statuses.is_empty() || q.statuses.contains(&e.meta.status))
            .filter(|e| q.workflow.as_deref().is_none_or(|w| e.meta.workflow == w))
            .filter(|e| q.plan_hash.as_deref().is_none_or(|h| e.meta.plan_hash == h))
            .collect();
        hits.sort_by_key(|e| std::cmp::Reverse(e.seq));
        let mut cursor = None;
        if let Some(n) = q.limit {
            if hits.len() > n {
                hits.truncate(n);
                cursor = hits.last().map(|e| e.seq.to_string());
            }
        }
        Ok(ListPage { items: hits.into_iter().map(|e| e.meta.clone()).collect(), cursor })
    }

    fn counts(&mut self) -> Result<Vec<Count>> {
        let mut by: HashMap<(&str, Status), u64> = HashMap::new();
        for e in self.entries.values() {
            *by.entry((e.meta.workflow.as_str(), e.meta.status)).or_default() += 1;
        }
        let mut out: Vec<Count> =
            by.into_iter().map(|((w, s), n)| Count { workflow: w.to_string(), status: s, count: n }).collect();
        out.sort_by(|a, b| (a.workflow.as_str(), a.status as u8).cmp(&(b.workflow.as_str(), b.status as u8)));
        Ok(out)
    }

    fn delete(&mut self, id: &str) -> Result<bool> {
        Ok(self.entries.remove(id).is_some())
    }

    fn purge(&mut self, before: f64, statuses: &[Status]) -> Result<u64> {
        let n = self.entries.len();
        self.entries.retain(|_, e| !(e.meta.updated_at < before && purge_selects(e.meta.status, statuses)));
        Ok((n - self.entries.len()) as u64)
    }

    fn send_signal(&mut self, id: &str, record: &[u8], now: f64) -> Result<u64> {
        let e = self.entry(id)?;
        if e.meta.status.is_finished() {
            return Err(finished_instance(id, e.meta.status));
        }
        e.inbox.push(record.to_vec());
        e.meta.due_at = Some(e.meta.due_at.map_or(now, |d| d.min(now)));
        Ok(e.inbox.len() as u64)
    }

    fn signals(&mut self, id: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        Ok(self
            .entries
            .get(id)
            .map(|e| {
                e.inbox
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i as u64 + 1, r))
                    .filter(|(seq, _)| *seq > after)
                    .map(|(seq, r)| (seq, r.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn due(&mut self, now: f64, limit: Option<usize>) -> Result<Vec<InstanceMeta>> {
        let mut hits: Vec<&InstanceMeta> = self.entries.values().map(|e| &e.meta).filter(|m| is_due(m, now)).collect();
        hits.sort_by(|a, b| claim_order(a).total_cmp(&claim_order(b)));
        if let Some(n) = limit {
            hits.truncate(n);
        }
        Ok(hits.into_iter().cloned().collect())
    }

    fn claim(&mut self, c: &Claim<'_>) -> Result<Vec<InstanceMeta>> {
        let mut hits: Vec<(f64, u64, String)> = self
            .entries
            .values()
            .filter(|e| claimable(&e.meta, c.now, c.plan_hashes))
            .map(|e| (claim_order(&e.meta), e.seq, e.meta.id.clone()))
            .collect();
        hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        hits.truncate(c.limit);
        let mut out = Vec::with_capacity(hits.len());
        for (_, _, id) in hits {
            let e = self.entry(&id)?;
            e.meta.owner = Some(c.owner.to_string());
            e.meta.lease_until = Some(c.now + c.lease);
            out.push(e.meta.clone());
        }
        Ok(out)
    }

    fn extend(&mut self, id: &str, owner: &str, lease: f64, now: f64) -> Result<f64> {
        let e = self.entry(id)?;
        check_lease(id, Some(owner), e.meta.owner.as_deref(), e.meta.lease_until, now)?;
        let until = now + lease;
        e.meta.lease_until = Some(until);
        Ok(until)
    }

    fn release(&mut self, id: &str, owner: &str) -> Result<bool> {
        let e = self.entry(id)?;
        if e.meta.owner.as_deref() != Some(owner) {
            return Ok(false);
        }
        e.meta.owner = None;
        e.meta.lease_until = None;
        Ok(true)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
