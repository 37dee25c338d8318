package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestOutputFormat_Render(t *testing.T) {
	type row struct {
		Name string `json:"name"`
		ID   int    `json:"id"`
	}
	rows := []row{{"deathstar", 65792}}
	table := func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tID")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%d\n", r.Name, r.ID)
		}
	}
	cases := map[outputFormat]string{
		"table": "NAME        ID\ndeathstar   65792\n",
		"json":  "[\n  {\n    \"name\": \"deathstar\",\n    \"id\": 65792\n  }\n]\n",
		"yaml":  "- id: 65792\n  name: deathstar\n",
	}
	for f, want := range cases {
		var b bytes.Buffer
		if err := f.render(&b, rows, table); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if b.String() != want {
			t.Errorf("%s: got %q, want %q", f, b.String(), want)
		}
	}
	var f outputFormat
	if err := f.Set("xml"); err == nil || !strings.Contains(err.Error(), "valid: table, json, yaml") {
		t.Errorf("Set(xml) = %v", err)
	}
}
