package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// outputFormat is the -o flag every listing command takes: a table for people, json or yaml for
// scripts.
type outputFormat string

func addOutputFlag(cmd *cobra.Command) *outputFormat {
	f := outputFormat("table")
	cmd.Flags().VarP(&f, "output", "o", "output format: table, json or yaml")
	return &f
}

func (f *outputFormat) String() string { return string(*f) }
func (f *outputFormat) Type() string   { return "format" }
func (f *outputFormat) Set(s string) error {
	switch s {
	case "table", "json", "yaml":
		*f = outputFormat(s)
		return nil
	}
	return fmt.Errorf("unknown output format %q (valid: table, json, yaml)", s)
}

// render writes v as JSON or YAML, or calls table with a tab-separated writer.
func (f outputFormat) render(w io.Writer, v any, table func(tw io.Writer)) error {
	switch f {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		out, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = w.Write(out)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	table(tw)
	return tw.Flush()
}
