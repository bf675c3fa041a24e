"""The amqp adapter: Helsenorge's Tjenestebuss (AMQP 1.0 on RabbitMQ), as HITS 1216 has it."""
