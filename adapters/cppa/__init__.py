"""CPP/CPA lookup for the Tjenestebuss (amqp) transport: NHN's CPPA REST service read into frozen values
(documents.py), fetched over HTTP (client.py) and resolved into one channel per pair of HER-ids with
Helsenorge.Messaging's fallback order CPA -> CPP -> Adresseregister (resolver.py). docs/cppa.md."""
