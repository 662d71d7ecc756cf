package main

import (
	"net/http"
	"os"
)

func main() {
	token := os.Getenv("GITHUB_TOKEN")
	req, _ := http.NewRequest("GET", "https://api.github.com/user", nil)
	req.Header.Set("Authorization", "Bearer "+token)
}
