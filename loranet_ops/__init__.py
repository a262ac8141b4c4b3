"""loranet's dev and ops tools, above the services they start: the `loranet` command line (cli), the
devnet supervisor (devnet), the demo catalogue and run (demo, demo_run), and local nats-server and
redis-server processes (servers). Nothing in libs/ or services/ imports this package.
"""
