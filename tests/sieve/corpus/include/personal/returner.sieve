require ["include", "fileinto"];
if header :contains "subject" "a" { fileinto "in-returner"; return; }
fileinto "returner-end";
