-- Who may commit outcomes of an external broker's partition (Kafka): each
-- assignment of (topic, partition) to a consumer claims it by raising
-- `epoch`, and reads the positions in the same transaction. Outcomes carry
-- the epoch they were read under; a commit applies none of a partition
-- claimed since (another instance owns it now and runs those events from
-- the position it read), so an owner that has not yet learned it lost a
-- partition can never interleave with the new one.
CREATE TABLE partition_claims (
    handler    TEXT NOT NULL,
    topic      TEXT NOT NULL,
    partition  BIGINT NOT NULL,
    epoch      BIGINT NOT NULL,
    PRIMARY KEY (handler, topic, partition)
);
