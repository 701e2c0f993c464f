require "fileinto";
if header :contains "subject" "a" { fileinto "first"; stop; }
fileinto "never-if-a";
