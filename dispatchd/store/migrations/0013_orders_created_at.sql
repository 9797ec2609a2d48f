-- Orders by creation time: the order latencies on /metrics (dispatchd/observe.py) read the orders
-- of the last 15 minutes on every instance every 15 s; without this index that is a scan of all orders.
CREATE INDEX IF NOT EXISTS orders_created_at ON orders (created_at);
