-- Consumer positions on an external broker's partitions (Kafka): every
-- record of (topic, partition) with an offset <= `position` is done for
-- `handler`. Written in the outcome transaction, read when a partition is
-- assigned, so effects stay exactly once across crashes and rebalances.
CREATE TABLE broker_positions (
    handler    TEXT NOT NULL,
    topic      TEXT NOT NULL,
    partition  BIGINT NOT NULL,
    position   BIGINT NOT NULL,
    PRIMARY KEY (handler, topic, partition)
);
