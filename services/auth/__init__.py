"""The NATS auth callout service: gives each client key its own NATS identity (loranet.natsauth)."""
