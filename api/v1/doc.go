// Package apiv1 holds the protobuf and gRPC definitions of Palisade's APIs (the node agent's local
// API; the mesh API between clusters) and their generated Go code. Edit the .proto files and run
// `make generate`; the generated files are committed.
package apiv1

//go:generate sh -c "PATH=../../.tools/bin:$PATH protoc -I. --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. agent.proto mesh.proto"
