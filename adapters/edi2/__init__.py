"""The ``edi2`` adapter: NHN's Meldingstjener REST API (EDI 2.0), authenticated with HelseID and DPoP."""
