package bpf

// The generated bindings and objects are committed so that building and testing need no clang.
// `make generate` regenerates them; CI fails when they differ from the committed ones.
//go:generate go tool bpf2go -cc clang -strip llvm-strip -target bpfel -type event -type ct_key -type ct_value -type policy_key -type policy_value -type ipcache_key -type ipcache_value -type endpoint_info -type event_stats datapath datapath.c -- -O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu -I./include
