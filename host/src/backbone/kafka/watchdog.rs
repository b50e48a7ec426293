//! The consumer's watchdog: deals orphaned partitions again where the
//! coordinator did not.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};

use super::Claims;

/// How often the [`Watchdog`] looks at the group.
pub(super) const WATCH_EVERY: Duration = Duration::from_secs(2);

/// How long partitions stay orphaned, with the group stable, before the
/// [`Watchdog`] acts: longer than a rebalance takes to write its claims.
const ORPHAN_GRACE: Duration = Duration::from_secs(6);

/// How long a member that left to rejoin waits before subscribing again:
/// the leave (after the revocation) must reach the coordinator first.
const REJOIN_AFTER: Duration = Duration::from_secs(1);

/// Deals orphaned partitions again. A partition is orphaned when its
/// latest claim belongs to a consumer that is no longer a member of the
/// group while the group is stable. The coordinator should have rebalanced
/// when that member left or its session expired; measured with tansu
/// 0.6.0, it drops the member but gives every survivor its old
/// assignment back, so the partitions stay unconsumed until another member
/// joins. The lowest live member then leaves and rejoins as a new member,
/// which makes any coordinator deal all partitions again. On a coordinator
/// that rebalances, the new owners' claims end the orphaning within
/// [`ORPHAN_GRACE`], and the watchdog does nothing.
pub(super) struct Watchdog {
    pub(super) group: String,
    pub(super) owner: String,
    pub(super) handler: String,
    pub(super) topics: Vec<String>,
    pub(super) claims: Claims,
    pub(super) next_check: Instant,
    pub(super) orphaned_since: Option<Instant>,
    /// Left the group to rejoin at this instant.
    pub(super) rejoin_at: Option<Instant>,
}

/// Whether group member `member` is the consumer `owner` (member ids are
/// `{client.id}-{uuid}`).
fn is_member(member: &str, owner: &str) -> bool {
    member
        .strip_prefix(owner)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

impl Watchdog {
    /// Looks at the group if it is time, and leaves or rejoins it as due.
    pub(super) fn tick<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        use rdkafka::consumer::Consumer;
        let now = Instant::now();
        if let Some(at) = self.rejoin_at {
            if now >= at {
                self.rejoin_at = None;
                let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                if let Err(error) = consumer.subscribe(&names) {
                    tracing::error!(handler = %self.handler, "kafka: subscribing again failed: {error}");
                    self.rejoin_at = Some(now + REJOIN_AFTER);
                }
            }
            return;
        }
        if now < self.next_check {
            return;
        }
        self.next_check = now + WATCH_EVERY;
        match self.orphaned(consumer) {
            Ok(orphaned) if orphaned.is_empty() => self.orphaned_since = None,
            Ok(orphaned) => {
                let since = *self.orphaned_since.get_or_insert(now);
                if now.duration_since(since) >= ORPHAN_GRACE {
                    tracing::warn!(handler = %self.handler, ?orphaned, "kafka partitions owned by no group member; rejoining the group so that they are dealt again");
                    self.orphaned_since = None;
                    consumer.unsubscribe();
                    self.rejoin_at = Some(now + REJOIN_AFTER);
                }
            }
            Err(error) => {
                self.orphaned_since = None;
                tracing::debug!(handler = %self.handler, "kafka group check: {error}");
            }
        }
    }

    /// The orphaned partitions of the subscribed topics (see [`Watchdog`]),
    /// if this consumer is the one to act on them: the live member whose
    /// id sorts first.
    fn orphaned<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
    ) -> std::result::Result<Vec<(String, i32, String)>, String> {
        use rdkafka::consumer::Consumer;
        let list = consumer
            .fetch_group_list(Some(&self.group), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let Some(group) = list.groups().iter().find(|g| g.name() == self.group) else {
            return Ok(Vec::new());
        };
        if group.state() != "Stable" {
            return Ok(Vec::new());
        }
        let members: Vec<&str> = group.members().iter().map(|m| m.id()).collect();
        let first = members.iter().min();
        if !first.is_some_and(|id| is_member(id, &self.owner)) {
            return Ok(Vec::new());
        }
        let owners = self.claims.owners()?;
        Ok(owners
            .into_iter()
            .filter(|(topic, _, owner)| {
                !owner.is_empty()
                    && self.topics.contains(topic)
                    && !members.iter().any(|id| is_member(id, owner))
            })
            .collect())
    }
}
