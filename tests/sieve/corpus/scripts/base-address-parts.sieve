require "fileinto";
if address :localpart :is "from" "coyote" { fileinto "local-coyote"; }
if address :domain :is ["to","cc"] "EXAMPLE.COM" { fileinto "domain-example"; }
if address :all :is "cc" "bob@example.com" { fileinto "bob-in-cc"; }
if address :matches :domain "from" "*.example.*" { fileinto "sub-example"; }
if address :is :all "to" "undisclosed-recipients" { fileinto "group-name"; }
if address :contains "from" "Showalter" { fileinto "phrase-never"; }
