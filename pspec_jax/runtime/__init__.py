"""Real runs: the client, the server and the dealer as separate processes over TLS.

  session  the client's RemoteSession and the server's command loop (the same programs)
  client   connect to a server and a dealer; `Client.generate` (secure or POST decoding)
  server   the server's accept loop, one session after another
  dealer   the dealer's accept loop and correction service
"""
