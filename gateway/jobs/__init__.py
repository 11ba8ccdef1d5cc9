"""Jobs: the submit path (validate, price, reserve, outbox), the forwarder, and the status sync."""
