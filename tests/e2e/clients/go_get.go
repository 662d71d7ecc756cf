// Fetch one URL with Go's net/http, configured as docs/CLIENTS.md says; print one JSON line.
// Usage: go_get URL
// Environment recipe: the default transport takes the proxy from HTTPS_PROXY (credentials in the
// URL are sent) and crypto/x509 on Linux reads the trusted roots from SSL_CERT_FILE.
// Explicit recipe (when CLEARWALL_PROXY and CLEARWALL_CA are set): an own transport with
// http.ProxyURL and a root pool holding the Clearwall CA.
// A refused CONNECT is an error naming the proxy's reason ("Forbidden", "Proxy Authentication
// Required"): printed as {"error", "message"}.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

func explicitClient(proxyURL, caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	proxy, err := url.Parse(proxyURL)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxy),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}, nil
}

func main() {
	out := map[string]any{}
	client := &http.Client{Timeout: 20 * time.Second}
	var err error
	if os.Getenv("CLEARWALL_CA") != "" {
		client, err = explicitClient(os.Getenv("CLEARWALL_PROXY"), os.Getenv("CLEARWALL_CA"))
	}
	var resp *http.Response
	if err == nil {
		resp, err = client.Get(os.Args[1])
	}
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
