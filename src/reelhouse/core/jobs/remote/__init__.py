"""Remote workers over NATS JetStream: the kernel side (dispatch, events, registry mirror) and
the worker side (pull consumers, a task context without a database). See bus.py."""
