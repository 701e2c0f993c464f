require ["index", "fileinto"];
if header :index 1 :contains "received" "mx1" { fileinto "first-mx1"; }
if header :index 1 :last :contains "received" "bad.example.biz" { fileinto "origin-bad"; }
if header :index 2 :contains ["received", "subject"] "relay" { fileinto "second-relay"; }
if address :index 2 :is ["to", "cc"] "ana@example.com" { fileinto "cc-ana"; }
if header :index 9 :contains "received" "" { fileinto "never"; }
