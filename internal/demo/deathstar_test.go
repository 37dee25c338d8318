package demo

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDeathstarHandler(t *testing.T) {
	srv := httptest.NewServer(DeathstarHandler("deathstar-1"))
	defer srv.Close()
	cases := []struct {
		method, path string
		status       int
		body         string
	}{
		{"POST", "/v1/request-landing", 200, "Ship landed\n"},
		{"PUT", "/v1/exhaust-port", 503, "Panic: deathstar exploded\n"},
		{"GET", "/v1/", 200, `"name":"deathstar-1"`},
		{"GET", "/v1/request-landing", 405, ""},
		{"GET", "/nope", 404, ""},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(string(body), c.body) {
			t.Errorf("%s %s = %d %q, want %d containing %q", c.method, c.path, resp.StatusCode, body, c.status, c.body)
		}
	}
}
