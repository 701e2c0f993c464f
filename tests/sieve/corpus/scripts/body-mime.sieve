require ["body", "fileinto"];
if body :content "multipart" :contains "MIME" { fileinto "multipart-mime"; }
if body :content "text/plain" :contains "Hello" { fileinto "plain-hello"; }
if body :content "text/html" :contains "Hello" { fileinto "html-hello"; }
if body :content "message/rfc822" :contains "Hello" { fileinto "rfc822-header-hello"; }
if body :content "message/rfc822" :contains "Someone Else" { fileinto "rfc822-from"; }
if body :content "multipart" :contains "Please say" { fileinto "never-nested"; }
if body :content "text" :is "" { fileinto "empty-text"; }
if body :content "" :contains "end of the outer" { fileinto "any-type"; }
if body :content "text/" :contains "" { fileinto "bad-type"; }
