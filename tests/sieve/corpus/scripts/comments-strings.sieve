/* bracketed comment */ require ["fileinto"]; # hash comment
if header :contains "subject" text: # comment after text:
present
.
{ fileinto "multiline-key"; }
if header :contains "subject" "I have a \"present\"" { fileinto "never"; }
if header :contains "subject" "pre\sent" { fileinto "escaped-s"; }
