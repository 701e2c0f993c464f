require ["reject", "fileinto"];
fileinto "Kept";
if true { reject "no thanks"; }
