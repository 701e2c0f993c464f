require ["envelope", "fileinto"];
if envelope :is "from" "" { fileinto "null-sender"; }
if envelope :domain :is "to" "example.com" { fileinto "to-example"; }
if envelope :localpart :matches "from" "owner-*" { fileinto "list-owner"; }
if envelope :all :contains "from" "coyote" { fileinto "coyote"; }
