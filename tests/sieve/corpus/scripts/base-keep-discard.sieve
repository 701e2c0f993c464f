require "fileinto";
keep;
discard;
if header :contains "from" "boss" { fileinto "boss"; }
