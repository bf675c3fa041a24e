"""A faithful local NHN: the fake HelseID, the Meldingstjener's checks and state, the Adresseregister.

    principal.py  who a request acts as (client id, the HER-ids it may act for) and the Authorizer
                  interface the MSH API simulator calls on every request
    helseid.py    the fake HelseID: OpenID discovery, the token endpoint (client assertion, DPoP, nonces)
    dpop_check.py the resource server's side: a DPoP-bound access token and its proof, checked as a real
                  server checks them (RFC 9449)
    ar.py         a stand-in for NHN's Adresseregister (CommunicationPartyService)
    msh_state.py  what the simulated Meldingstjener knows (messages, deliveries, notifications, configurations)
    faults.py     fault injection for the simulated NHN
    peers.py      scripted EDI peers: the remote parties NHN reaches over ebXML (St. Olavs, a lab)

Each check here is one a real server makes, so a client that passes them is a client NHN will take;
nothing here shares code with the clients it tests (adapters/edi2 is never imported).
"""
