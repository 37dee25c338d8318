package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/health"
	"github.com/palisade-mesh/palisade/kvstore"
)

// gossipKeysKey is where agents find the cluster's gossip key set (agent/health.go).
const gossipKeysKey = "health/keys"

// newGossipKeysCommand manages the cluster's gossip keys in etcd. Keys are shown by fingerprint
// only; agents apply every change within moments through their watch.
func newGossipKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gossip-keys",
		Short: "List and rotate the cluster's gossip encryption keys (in etcd)",
		Long: `Rotate without restarting any agent, waiting a few seconds between steps so every agent
has applied the previous one:
  palisade node gossip-keys add            # install a new key everywhere (not yet used to send)
  palisade node gossip-keys use <fp>       # send with it
  palisade node gossip-keys remove <old>   # stop accepting the old key`,
	}
	kvf := addKvstoreFlags(cmd.PersistentFlags())

	list := &cobra.Command{Use: "list", Short: "List key fingerprints; * marks the primary key", Args: cobra.NoArgs}
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		return withGossipKeys(cmd.Context(), kvf, func(ks health.KeySet) (health.KeySet, bool, error) {
			printGossipKeys(cmd.OutOrStdout(), ks)
			return ks, false, nil
		})
	}

	var keyFile string
	add := &cobra.Command{Use: "add", Short: "Install a new key (generated, or base64 from --key-file) next to the current ones", Args: cobra.NoArgs}
	add.Flags().StringVar(&keyFile, "key-file", "", "file holding the new key in base64 (16, 24 or 32 bytes); default: a fresh random key")
	add.RunE = func(cmd *cobra.Command, _ []string) error {
		key, err := newGossipKey(keyFile)
		if err != nil {
			return err
		}
		return withGossipKeys(cmd.Context(), kvf, func(ks health.KeySet) (health.KeySet, bool, error) {
			out, err := ks.WithKey(key)
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "added key %s\n", health.Fingerprint(key))
			}
			return out, true, err
		})
	}

	use := &cobra.Command{Use: "use FINGERPRINT", Short: "Make an installed key the primary (sending) key", Args: cobra.ExactArgs(1)}
	use.RunE = func(cmd *cobra.Command, args []string) error {
		return withGossipKeys(cmd.Context(), kvf, func(ks health.KeySet) (health.KeySet, bool, error) {
			out, err := ks.Use(args[0])
			return out, true, err
		})
	}

	remove := &cobra.Command{Use: "remove FINGERPRINT", Short: "Remove a key that is not the primary", Args: cobra.ExactArgs(1)}
	remove.RunE = func(cmd *cobra.Command, args []string) error {
		return withGossipKeys(cmd.Context(), kvf, func(ks health.KeySet) (health.KeySet, bool, error) {
			out, err := ks.Without(args[0])
			return out, true, err
		})
	}
	cmd.AddCommand(list, add, use, remove)
	return cmd
}

func newGossipKey(file string) ([]byte, error) {
	if file == "" {
		ks, err := health.NewKeySet()
		return ks.Primary, err
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(raw)))
	if err != nil {
		return nil, fmt.Errorf("--key-file %s: not base64", file)
	}
	return key, nil
}

// withGossipKeys reads the key set, lets change compute a new one and writes it back only if
// nobody changed it in between.
func withGossipKeys(parent context.Context, kvf *kvstoreFlags, change func(health.KeySet) (health.KeySet, bool, error)) error {
	ctx, cancel := context.WithTimeout(parent, 30*time.Second)
	defer cancel()
	kv, err := connectKvstore(ctx, kvf)
	if err != nil {
		return err
	}
	defer kv.Close()
	cur, found, err := kv.Get(ctx, gossipKeysKey)
	if err != nil {
		return fmt.Errorf("read %s: %w", gossipKeysKey, err)
	}
	if !found {
		return fmt.Errorf("no gossip keys in etcd at %s: the first agent of the cluster creates them", gossipKeysKey)
	}
	ks, err := health.ParseKeySet(cur.Value)
	if err != nil {
		return fmt.Errorf("%s: %w", gossipKeysKey, err)
	}
	next, write, err := change(ks)
	if err != nil || !write {
		return err
	}
	raw, err := next.Marshal()
	if err != nil {
		return err
	}
	res, err := kv.Txn(ctx, []kvstore.Cmp{kvstore.ModRevisionEquals(gossipKeysKey, cur.ModRevision)}, []kvstore.Op{kvstore.OpPut(gossipKeysKey, raw, kvstore.NoLease)}, nil)
	if err != nil {
		return fmt.Errorf("write %s: %w", gossipKeysKey, err)
	}
	if !res.Succeeded {
		return errors.New("the gossip keys changed meanwhile; run the command again")
	}
	return nil
}

func printGossipKeys(w io.Writer, ks health.KeySet) {
	for _, k := range ks.Keys {
		mark := " "
		if bytes.Equal(k, ks.Primary) {
			mark = "*"
		}
		fmt.Fprintf(w, "%s %s (%d bytes)\n", mark, health.Fingerprint(k), len(k))
	}
}
