//! Call records: the gRPC contract, the SQLite store, the records service and the
//! switchboard's client.
