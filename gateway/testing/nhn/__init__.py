"""A faithful local NHN: the fake HelseID, the Meldingstjener's checks and state, the Adresseregister.

    principal.py      who a request acts as (client id, the HER-ids it may act for) and the Authorizer
                      interface the MSH API simulator calls on every request
    helseid.py        the fake HelseID: OpenID discovery, the token endpoint (client assertion, DPoP, nonces)
    dpop_check.py     the resource server's side: a DPoP-bound access token and its proof, checked as a real
                      server checks them (RFC 9449)
    ar.py             a stand-in for NHN's Adresseregister (CommunicationPartyService)
    msh.py            the simulated Meldingstjener REST API: the app (create_msh_app) and its routing by api-version
    msh_simulator.py  one simulated NHN (Simulator): the shared state, the peers, the faults, the clock, the limits
    msh_call.py       one API request after routing (Call): reading and checking its query, path and JSON body
    msh_errors.py     the refusals as they go out (v3 problem details, v2 ErrorMessage) and what a fault answers
    msh_control.py    the simulator's own control API, /_sim/... (faults, the clock, the peers); not NHN's
    msh_v3.py         API version 3's handlers: configurations, notifications (polled and SSE), messages
    msh_v2.py         API version 2's handlers (NHN's OpenAPI document "MSH API v2"), on the same state
    msh_state.py      what the simulated Meldingstjener knows (messages, deliveries, configurations) and its rules
    msh_documents.py  the business documents: what is read from one, and the AppRec NHN builds for an answer
    msh_log.py        the global notification log: gapped offsets, per-HER-id reading, waiting for the next write
    faults.py         fault injection for the simulated NHN
    peers.py          scripted EDI peers: the remote parties NHN reaches over ebXML (St. Olavs, a lab)

Each check here is one a real server makes, so a client that passes them is a client NHN will take;
nothing here shares code with the clients it tests (adapters/edi2 is never imported).
"""
