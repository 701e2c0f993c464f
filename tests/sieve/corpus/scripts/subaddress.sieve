require ["envelope", "subaddress", "fileinto"];
if envelope :user "to" "postmaster" { fileinto "inbox.postmaster"; stop; }
if envelope :detail "to" "news" { fileinto "news"; }
if envelope :detail "to" "" { fileinto "empty-detail"; }
if address :user "to" "ana" { fileinto "user-ana"; }
if address :detail :matches "to" "*" { fileinto "has-detail"; }
