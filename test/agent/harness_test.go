package agent_test

import (
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/palisade-mesh/palisade/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

// land sends the tiefighter's request and returns the response body, or the error.
func land(c *http.Client, ip string) (string, error) {
	resp, err := c.Post("http://"+ip+"/v1/request-landing", "text/plain", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}
