"""HelseID for NHN's APIs: DPoP-bound access tokens by client credentials with a ``private_key_jwt``
assertion (client.py), and the JWTs and key behind them (dpop.py). The Meldingstjener (edi2) and the CPPA
service (cppa, through the amqp adapter) use the same client."""
