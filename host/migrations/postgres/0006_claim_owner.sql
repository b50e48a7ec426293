-- Which consumer holds each claim: the Kafka client id of the group member
-- that made it. A member that sees a partition whose owner is no longer in
-- the group (a broker that never rebalanced after a member died) rejoins
-- the group so that the partition is dealt again.
ALTER TABLE partition_claims ADD COLUMN owner TEXT NOT NULL DEFAULT '';
