// Fetch one URL with Go's default HTTP client, configured as docs/CLIENTS.md says; print one JSON line.
// Usage: go run go_get.go URL
// http.DefaultTransport takes the proxy from HTTPS_PROXY (credentials in the URL are sent);
// crypto/x509 on Linux reads the trusted roots from SSL_CERT_FILE.
// A refused CONNECT is an error ("Forbidden", "Proxy Authentication Required"): printed as {"error", "message"}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	client := &http.Client{Timeout: 20 * time.Second}
	out := map[string]any{}
	resp, err := client.Get(os.Args[1])
	if err != nil {
		out["error"] = "Error"
		out["message"] = err.Error()
	} else {
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		headers := map[string]string{}
		for k := range resp.Header {
			headers[k] = resp.Header.Get(k)
		}
		out["status"] = resp.StatusCode
		out["headers"] = headers
		out["body"] = string(body)
	}
	data, _ := json.Marshal(out)
	fmt.Println(string(data))
}
