"""Rate limits: rules, bucket keys and the limiter behind them."""
