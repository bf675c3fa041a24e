"""The testing harness: simulators and fixtures that integrators use - shipped with the gateway, but never
imported by the core (model, validation, security, errors, xml) nor by the product's request path."""
